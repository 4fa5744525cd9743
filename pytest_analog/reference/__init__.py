"""Teacher references: what the teacher contributes to every criterion, as data (see `store`)."""
