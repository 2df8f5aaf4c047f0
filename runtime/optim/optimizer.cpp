// optimizer.cpp: placeholder, being written.
