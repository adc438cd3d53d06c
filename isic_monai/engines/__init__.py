"""What drives the Ignite engines: inferers, progress, resume, run tracking and folder inference."""
