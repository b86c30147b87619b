"""Models of the loop: matrix factorization on the composite feedback, a biased rating model, user
segments, their evaluation on a temporal hold-out, and the gate that decides what is published."""
