// lr_scheduler.cpp: placeholder, being written.
