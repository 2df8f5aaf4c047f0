// h5.cpp: placeholder, being written.
