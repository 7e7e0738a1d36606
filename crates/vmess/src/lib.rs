//! VMess: the AEAD and legacy header and body codecs, and the inbound and outbound handlers.
