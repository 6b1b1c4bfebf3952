"""SIP front end: the sans-I/O UAS core, RTP media, and the server that runs calls on them."""
