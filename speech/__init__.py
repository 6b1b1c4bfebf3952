"""Speech: turning what a caller says into digits and menu choices."""
