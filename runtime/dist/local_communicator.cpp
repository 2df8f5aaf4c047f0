// local_communicator.cpp: placeholder, being written.
