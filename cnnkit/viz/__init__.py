"""How CNNs see: layer summaries with receptive fields, feature maps, filters and single convolutions."""
