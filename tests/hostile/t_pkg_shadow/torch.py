open("@@SAFE@@/shadowed-torch", "w").write("imported\n")
raise ImportError("the candidate's own torch.py was imported in place of the real one")
