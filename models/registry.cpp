// registry.cpp: placeholder, being written.
