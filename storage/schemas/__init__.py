"""Every table the project writes, one module per stage or command (named after the tables it
holds): each Arrow schema with its ``TableSpec`` beside it; ``storage.registry`` lists them."""
