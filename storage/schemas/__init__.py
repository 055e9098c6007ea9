"""Arrow schemas of every table the project writes; ``storage.registry`` names them."""
