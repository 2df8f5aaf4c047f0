// mpi_communicator.cpp: placeholder, being written.
