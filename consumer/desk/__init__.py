"""The review desk (``labelwatch review``): a web page where reviewers work the review queue.

It keeps no state of its own: the queue, the answers and the leases are all read back from Kafka
(:mod:`consumer.desk.feed`), so a restart or a second replica shows the same queue.
"""
