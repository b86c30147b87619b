"""The embedded local stand-in: moto server, the local API, the stream poller and the archiver."""
