// Fixture web extension (only its presence is checked).
