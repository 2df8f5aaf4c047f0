// rank_env.cpp: placeholder, being written.
