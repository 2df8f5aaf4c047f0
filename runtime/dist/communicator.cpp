// communicator.cpp: placeholder, being written.
