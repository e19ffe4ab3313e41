"""Models a config describes: timm backbones for images, an MLP for tables."""
