// resnet.cpp: placeholder, being written.
