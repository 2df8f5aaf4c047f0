// gpt.cpp: placeholder, being written.
