"""Model and kernel code: building timm models, preprocessing, the fast ViT forward, shard maps."""
