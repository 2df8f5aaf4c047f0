// clip.cpp: placeholder, being written.
