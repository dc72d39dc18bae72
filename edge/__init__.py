"""The silhouette-edge package: from trained person models to edge devices."""
