"""Reading training records and turning them into padded mini-batches."""
