"""What a node needs beside the spec: the hook installed on the host (`gpu-cdi install-hook`),
the hook path a spec names, and the container runtimes configured (`gpu-cdi configure`)."""
