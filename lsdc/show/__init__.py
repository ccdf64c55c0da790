"""`lsdc show`: PNG montages of stored samples and of localised keypoints, to look at before trusting them."""
