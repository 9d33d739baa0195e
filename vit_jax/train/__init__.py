"""The trainer: optimizer, losses, state, pure steps and the loop."""
