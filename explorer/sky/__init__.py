"""Finding objects on the sky: parsing names and coordinates, the catalogue matcher, fetching or uploading a cutout and embedding it."""
