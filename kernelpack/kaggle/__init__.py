"""The Kaggle side: the official client wrapped (`client`) and a local Kaggle service."""
