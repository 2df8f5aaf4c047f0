// synthetic.cpp: placeholder, being written.
