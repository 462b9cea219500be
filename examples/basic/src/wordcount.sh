#!/bin/sh
# Counts words per line of standard input; prints the total.
total=0
while IFS= read -r line; do
    n=$(printf '%s\n' "$line" | wc -w)
    total=$((total + n))
done
echo "$total"
