//! Reverse proxy: the bridge and the portal.
