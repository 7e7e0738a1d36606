//! Mux.Cool: the frame codec and the client and server session managers.
