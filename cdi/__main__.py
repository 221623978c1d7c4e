from cdi.cli import console

console()
