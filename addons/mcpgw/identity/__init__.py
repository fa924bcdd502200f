"""Who is calling: consumers and groups (`consumers`), API keys (`keyauth`), OAuth bearer tokens
(`oauth`), and how a client discovers the authorization server (`prm`)."""
