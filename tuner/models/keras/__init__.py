"""The book's Keras families and the training loop they share."""
