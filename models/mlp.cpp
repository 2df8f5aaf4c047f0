// mlp.cpp: placeholder, being written.
