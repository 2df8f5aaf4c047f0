// dataset.cpp: placeholder, being written.
