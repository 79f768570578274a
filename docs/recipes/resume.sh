# A long job that may crash: rerun the same command and it continues where it stopped,
# skipping the images already in results.jsonl, without duplicate records.
cnnkit classify "$IMAGES" --recursive --output results.jsonl --skip-existing
