"""What the numbers say: claims and their rules, the lab's reference numbers, figures, and the tables of a
study's runs. Reads results; computes none."""
