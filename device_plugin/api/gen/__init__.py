"""Generated protobuf modules; regenerate with `make proto`. Do not edit."""
