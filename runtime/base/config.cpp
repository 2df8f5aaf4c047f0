// config.cpp: placeholder, being written.
