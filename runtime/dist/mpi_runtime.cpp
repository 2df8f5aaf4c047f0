// mpi_runtime.cpp: placeholder, being written.
