open("@@SAFE@@/shadowed-sitecustomize", "w").write("imported\n")
raise ImportError("the candidate's own sitecustomize.py was imported in place of the real one")
