// sampler.cpp: placeholder, being written.
