# Count detections per class across a folder into a CSV file.
cnnkit detect "$IMAGES" --format jsonl \
  | jq -r '.predictions[].label' | sort | uniq -c \
  | awk 'BEGIN { print "label,count" } { print $2 "," $1 }' > counts.csv
