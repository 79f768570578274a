# Classify a folder and keep the images whose best label scored under 0.9.
cnnkit classify "$IMAGES" --format jsonl \
  | jq -c 'select(.error == null and .predictions[0].score < 0.9) | {path, label: .predictions[0].label, score: .predictions[0].score}' \
  > low_confidence.jsonl
