// h5_dataset.cpp: placeholder, being written.
