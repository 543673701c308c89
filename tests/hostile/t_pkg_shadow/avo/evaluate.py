open("@@SAFE@@/shadowed-avo-evaluate", "w").write("imported\n")
raise ImportError("the candidate's own avo/ was imported in place of the real one")
