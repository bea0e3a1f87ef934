"""From the line back to training (issue 31): what the deployed model saw and said, and what to do about it.

- ``predlog``: the prediction log: one record per predicted image (model, verdict, boxes, latency,
  image statistics), optionally the image in a capped content-addressed store; SQLAlchemy, a
  SQLite file by default, PostgreSQL by URL. Self-contained (SQLAlchemy, numpy, OpenCV): it is
  shipped beside the registered pyfunc's code, so the served model logs without the project;
- ``drift`` / ``select``: drift checks over a window of the log and the review selection;
- ``review``: the review queue in Label Studio and the way back into the retrain inbox.
"""
