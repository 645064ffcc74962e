"""The Label Studio bridge (``labelwatch label-studio``): annotations in, review tasks out, answers back."""
