// placeholder.cpp: placeholder, being written.
