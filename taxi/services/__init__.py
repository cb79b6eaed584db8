"""Business rules: accounts, trips and photos. Nothing here knows about Sanic."""
