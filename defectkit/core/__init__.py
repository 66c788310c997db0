"""The core every stage stands on: errors, atomic output, image and mask I/O, RLE, weight fetching,
torch helpers, the file-format contract (flat names, split manifest, ids) and the result model.

It imports no stage (a test checks it), so any stage, the leaderboard or a user's script can use it.
"""
